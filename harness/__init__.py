"""What exercises the service from outside, shared by the tests and the benchmarks: a real
service process (`server`), photos and scenes made from the public-domain portrait (`photos`),
test videos (`videos`), a load generator (`load`) and hostile raw-HTTP clients (`raw_http`)."""

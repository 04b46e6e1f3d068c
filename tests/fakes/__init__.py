"""Wire-true fakes of outside services (AI upstreams, push providers), for tests and benchmarks."""

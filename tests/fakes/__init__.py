"""Wire-true fakes of outside services (push providers), for tests and benchmarks."""

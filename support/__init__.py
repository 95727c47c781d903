"""What tests, benchmarks and CI's runtime check share, and the shipped packages must not carry: the real
service started on a loopback port, and real-looking inputs (product photos made from Fashion-MNIST items,
hostile uploads made on demand)."""

"""Operator scripts that `make` targets run: a local RabbitMQ cluster, Flower's password."""

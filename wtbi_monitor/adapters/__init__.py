"""Adapters: the only modules that import client libraries (aiokafka, influxdb-client).

They implement the protocols of ports.py; cli.py wires them into the service.
"""

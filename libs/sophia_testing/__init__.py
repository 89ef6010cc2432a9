"""What the service tests stand on: `servers` (real uvicorn on loopback), `datastores` (real
PostgreSQL and redis-server) and faithful fakes of the upstream APIs the services call."""

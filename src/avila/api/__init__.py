"""HTTP transport: routers by resource over the domain packages. No business logic here."""

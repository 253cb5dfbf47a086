"""The Dataverse-compatible Web API (OData v4 at ``/api/data/v9.2/``)."""

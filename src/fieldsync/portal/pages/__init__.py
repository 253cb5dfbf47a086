"""The portal's pages, one module per page or group of pages; ``fieldsync.portal.router``
mounts them."""

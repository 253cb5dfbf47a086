"""What every HTTP router shares (the server's own routes, the Web API, the portal): the
caller of a request, request bodies held to their limits, JSON rendering, file bytes with
ranges and digests. It sits below the routers and imports none of them."""

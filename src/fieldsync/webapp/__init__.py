"""The field web app, served at ``/app``: the built bundle (``static/``, made by
``make web`` from ``web/``, committed so a clone with only Python serves it) and the router."""

"""The field app: a terminal app for the person in the field, built on the device SDK.

``fieldapp.app`` holds the Textual app, ``fieldapp.screens`` its screens; ``fieldapp.forms`` and
``fieldapp.indicator`` are pure (what a form shows and parses, the status indicator), and
``fieldapp.command`` is ``fieldsync app``. Importing this package does not import Textual.
"""

"""A FastAPI app with its own users, login and tables that embeds pgpulse.

Run it with ``python -m examples.fastapi_app``; see README.md beside this file.
"""

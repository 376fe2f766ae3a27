"""The inference worker: one long-lived spawn process owned by the app, and its asyncio client.

Nothing here imports Qt; torch is imported only inside the worker process.
"""

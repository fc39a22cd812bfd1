"""The fencelock test suite (unittest): see servers.py for the servers it starts."""
import logging

# IsolatedAsyncioTestCase runs in debug mode: starting servers and cluster clients is "slow"
logging.getLogger("asyncio").setLevel(logging.ERROR)

"""The local web app: an aiohttp adapter over the node API (imported only when `web.enabled`)."""

"""The HTTP server's edge: the webhook, the API, credentials, the checks every
request passes first, and the limits on connections."""

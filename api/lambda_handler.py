"""AWS Lambda entry point: the combined app behind Mangum (responses are buffered: no SSE)."""

from mangum import Mangum

from api.index import app

handler = Mangum(app, lifespan="auto")

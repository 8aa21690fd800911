"""A one-route Ray Serve app: the startup and latency floor of Ray Serve itself on this machine."""

from fastapi import FastAPI
from ray import serve

api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Trivial:
    @api.get("/livez")
    def live(self) -> dict:
        return {"ok": True}


app = Trivial.bind()

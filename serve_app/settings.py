"""Service settings: environment variables prefixed `SASTRE_`, an optional `.env`, embedded defaults.

Nothing needs to be set for a local run. The app builder reads settings once, in the driver, and hands
the resolved values to every deployment, so all replicas agree on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SASTRE_", env_file=".env", extra="ignore")

    environment: Literal["local", "production"] = "local"
    data_dir: Path = Field(default=Path(".sastre"), description="embedded database, local storage, generated secrets")
    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset starts the embedded server")

    storage_backend: Literal["local"] = "local"
    public_base_url: str = Field(default="http://127.0.0.1:8000", description="where browsers reach this service")

    model_profile: Literal["pretrained", "tiny-random", "full-random", "auto"] = "auto"
    base_model: str = "stabilityai/sdxl-turbo"
    controlnet_model: str = "diffusers/controlnet-canny-sdxl-1.0"
    ip_adapter_model: str = "h94/IP-Adapter"
    image_size: int = Field(default=512, ge=64, le=1024, multiple_of=64)
    num_inference_steps: int = Field(default=1, ge=1, le=4)
    control_detector: Literal["canny"] = "canny"
    watermark_text: str = "SASTRE"

    cors_origins: list[str] = Field(default_factory=lambda: ["http://localhost:3000", "http://127.0.0.1:3000"])

    job_max_attempts: int = Field(default=3, ge=1)
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_seconds: float = Field(default=2.0, gt=0)
    runner_concurrency: int = Field(default=16, ge=1, description="jobs one runner works on at once")

    @property
    def media_base_url(self) -> str:
        return self.public_base_url.rstrip("/") + "/media"

    @property
    def storage_root(self) -> Path:
        return self.data_dir / "storage"

    def storage_config(self) -> dict:
        """What a worker needs to open the same storage (workers do not read settings themselves)."""
        return {"backend": self.storage_backend, "root": str(self.storage_root.resolve()),
                "public_base_url": self.media_base_url}

"""The application builder named by the Serve configs (`import_path: serve_app.app:build_app`).

It runs once in the driver: reads settings (environment, `.env`, then `args` from the config file),
prepares the database and catalog, and binds the deployment graph with the resolved values so every
replica, wherever it is scheduled, sees the same configuration.
"""

from __future__ import annotations

from ray.serve import Application

from deployments.serving import ControlNetPreprocessor, Finisher, SdxlTurboGenerator
from serve_app.bootstrap import prepare, resolve_jwt_secret
from serve_app.generation.service import job_out
from serve_app.ingress import Ingress
from serve_app.jobqueue.job_runner import JobRunner
from serve_app.settings import Settings


def build_app(args: dict | None = None) -> Application:
    settings = Settings(**(args or {}))
    jwt_secret = resolve_jwt_secret(settings)  # first: production without a secret must not start
    database_url = prepare(settings)
    # Secrets travel only inside `storage`, `database_url` and `jwt_secret`, never in the settings dict.
    resolved = settings.model_dump(mode="json", exclude={"database_url", "s3_secret_access_key", "jwt_secret"})
    resolved["data_dir"] = str(settings.data_dir.resolve())
    storage = settings.storage_config()

    timeout = settings.stage_timeout_seconds
    preprocessor = ControlNetPreprocessor.bind(timeout)
    generator = SdxlTurboGenerator.bind(
        settings.model_profile, storage, settings.model_sources(), settings.num_inference_steps, settings.image_size,
        settings.max_batch_size, settings.batch_wait_seconds, stage_timeout_s=timeout,
        cpu_threads=settings.generator_cpu_threads, fault_stall_file=settings.fault_stall_file,
    )
    finisher = Finisher.bind(storage, settings.watermark_text, stage_timeout_s=timeout,
                             unhealthy_after_s=settings.unhealthy_after_seconds)
    runner = JobRunner.bind(resolved, database_url, storage, preprocessor, generator, finisher, job_out)
    return Ingress.bind(resolved, database_url, storage, jwt_secret, runner, preprocessor, generator, finisher)

"""Ray mechanics, the only package that imports Ray: joining a cluster (cluster), the prepare pipeline on Ray
Data (datasets, augment), the splits into Ray Train (ingest), a run's TorchTrainer (trainer), its workers
(worker_setup, worker) and checkpoints, progress from workers to the driver, Tune trials (tune, capacity,
ray_internals) and the Ray Serve deployment (serve). The commands that use them are in domainft.commands.
"""

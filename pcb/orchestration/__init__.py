"""The host side: the stages of a pipeline, each run on this host or in its container.

- `settings`: invoke.yaml's `pcb:` section, checked, with a task's options on top.
- `argv`: every stage's command line (a StageCall, `stage.py`), written once.
- `pipeline`: the order of the stages of `invoke full`, `trt` and `import-results`.
- `preflight`, `dry_run`: the host checked before anything starts; the plan printed.
- `executors`, `docker_executor`: where a call runs (this host, a container); `spec`,
  `lifecycle`, `owner`, `users`, `limits`: the container, its life, its user and limits.
- `images`, `builds`, `build_inputs`, `base_image`, `engine`: the images and their builds.
- `commands`: what each task does; `task_options`, `invoke_tasks`: the Invoke tasks.
Only this package imports Docker and Invoke; nothing in an image imports it.
"""

"""Dataflow Flex Template: Dockerfile, metadata.json and the launcher's main.

The image is Beam's Python SDK image at the version setup.py pins, with
stallwatch installed and Google's Flex Template launcher copied in, so the
same image launches the job and runs its workers
(``--sdk_container_image``). See docs/runners.md and ``make template``.
"""

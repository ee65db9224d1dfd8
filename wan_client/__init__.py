"""A client for running the pack's workflows on ComfyUI servers (``python -m wan_client --help``).

Standard library plus aiohttp (for ComfyUI's progress websocket; ComfyUI itself depends on it).
It imports nothing from ComfyUI or wan_core, so it runs on any machine that can reach the servers.
"""

"""Every `stillroom` command: each parses its options, calls one library function, prints.

Modules by face: `distill` (harvest, train, eval, distill, demo, task, export), `serve`
(the gateway and its accounts), `audit`, `trace`, `watermark`. `main` mounts them.
"""

from stillroom.cli.main import app, main

__all__ = ["app", "main"]

"""The web dashboard: the browser UI's files, and nothing on the server side.

Owns `static/` — `index.html`, the bundled `dashboard.js` and `dashboard.css`, the licences of
the npm packages inside the bundle, and `build.json` (which sources and package versions the bundle
was built from) — and `web/`, the sources they are built from (`make dashboard`; node is needed
only to rebuild, never to install or run). The orchestrator's HTTP server serves these files and
the JSON API they read; this package imports nothing and must never grow server code: it is data
shipped with the Python package.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"  # what the server serves: index.html at /, the rest at /static/

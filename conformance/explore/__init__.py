"""Looking at images: `conformance ref inspect`, `conformance ref layer show` and the layer-stack picture.

Controller side: it reads layouts and blobs through conformance.ref (never changing them) and may
use jinja2. What it shows is built as plain data first (inspect.py, stack.py), then rendered as
text, JSON or SVG, so each rendering can be tested on its own.
"""

"""`ditkit serve`: a local web page over one checkpoint (needs the serve extra: `pip install ditkit[serve]`).

- `jobs`: what the buttons do, without Gradio (checks, `DiTPipeline` and walk calls, files to show).
- `page`: the Gradio page (Generate and Walk tabs).
- `server`: offline, private launch settings and the serving loop.
"""

"""poseloop's own small web stack: the live view of a run (``poseloop run --web``).

Starlette + uvicorn in a background thread; the page's HTML, JavaScript and CSS ship in
``static/`` (no CDN: rigs are often offline). Anything but loopback needs an access token.
"""

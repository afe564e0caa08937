"""The page at `/`: chat, status and connection settings, as a client of the public API.

Its HTML, JavaScript and CSS are files inside this package (`index.html`, `static/`), served
as they are: no build step, no CDN, nothing fetched at run time.
"""

"""`clipsearch serve`: one process that keeps an index and its model warm behind a JSON API (api.py) and a
Gradio page (ui.py), both over one SearchService (service.py), joined in one FastAPI app (app.py).

Importing this package loads neither gradio nor fastapi: they load when the app is built."""

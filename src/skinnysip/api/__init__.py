"""HTTP JSON API (FastAPI). Thin: validate → call an operation → return its result."""

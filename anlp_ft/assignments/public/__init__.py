"""Public checks, one module per lab: ``lab01.py`` holds ``ex1``, ``ex2``... for labs/01_*.ipynb."""

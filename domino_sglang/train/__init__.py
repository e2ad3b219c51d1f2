"""Drafter training (``domino-train``), the small target's pre-training and the recipe that
reproduces the project's committed assets."""

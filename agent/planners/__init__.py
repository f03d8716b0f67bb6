"""Planners: who decides what the responder does. ``deterministic`` (the default, no API key) follows the
matched runbook exactly; ``llm_planner`` lets a chat model investigate and propose, and code validates."""

"""Incident narratives: a template at once, an LLM narrative later (cached, budgeted,
redacted), and ``POST /api/v1/narratives``. ``wiring.setup(app)`` plugs it in.

    facts.py, context.py   what an incident says, compacted for a prompt
    rca.py, storm.py       the other two subjects: RCA documents and alert storms
    redact.py, clean.py    what leaves for the LLM, and what comes back to people
    tokens.py, prompt.py   token counting, JSON vs TOON, cutting to the cap
    templates.py           the files in configs/prompts/ (or llm.prompts_dir)
    llm.py                 AsyncOpenAI with a timeout and bounded retries
    cache.py, budget.py, ratelimit.py   cost and abuse control (bot/upstream/breaker.py)
    narrator.py            the flow; jobs.py the timeline subscriber; api.py the endpoint
"""

from bot.narrative.wiring import setup

__all__ = ["setup"]

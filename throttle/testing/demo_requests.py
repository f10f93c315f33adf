"""The chat requests of ``throttle demo`` and the benchmarks: output caps make TPM bind."""

from __future__ import annotations


def demo_request(index: int) -> dict[str, object]:
    """Return the ``index``-th request of a classification backlog (with metadata)."""
    topic = ("invoices", "support tickets", "product reviews", "meeting notes")[index % 4]
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Classify the text into one category. Be brief."},
            {"role": "user", "content": f"Item {index} from the {topic} backlog: " + "lorem " * 40},
        ],
        "max_tokens": 200 + (index * 37) % 300,
        "metadata": {"item": index, "topic": topic},
    }

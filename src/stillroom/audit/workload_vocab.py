"""Vocabularies of the production workloads (workloads.py): companies, products, languages,
labeling tasks, tools, policies, document kinds and code templates."""

from __future__ import annotations

import numpy as np

# fmt: off
COMPANIES = ("Northwind", "Contoso", "Fabrikam", "Tailspin", "Wingtip", "Litware", "Proseware")
TZS = (-8.0, -7.0, -6.0, -5.0, -3.0, 0.0, 1.0, 2.0, 3.0, 5.5, 8.0, 9.0, 10.0)
# Relative load by local hour 0-23: office work, and consumers' waking day.
OFFICE = np.array([2, 1, 1, 1, 1, 2, 5, 15, 50, 90, 100, 100,
                   60, 80, 100, 100, 95, 70, 35, 20, 15, 12, 8, 4]) / 100
CONSUMER = np.array([15, 8, 5, 4, 4, 5, 12, 30, 55, 80, 95, 100,
                     100, 100, 95, 90, 90, 85, 85, 90, 90, 80, 60, 35]) / 100

PRODUCTS = {
    "meal-kit subscription": "box delivery recipe skip pause allergy ingredients voucher",
    "fitness tracker": "band sync battery heart-rate app firmware strap charger",
    "banking app": "card transfer pin statement overdraft fee limit savings",
    "project-management app": "board workspace invite seat export integration sprint sso",
    "streaming service": "plan profile download subtitles device playback household",
    "e-bike": "battery motor charger frame warranty brakes display",
    "mobile phone plan": "data roaming sim esim bill upgrade coverage voicemail",
}
COUNTRIES = ("Canada", "Germany", "Mexico", "Japan", "Australia", "Brazil", "India", "Ireland")
OPENERS = (
    "where is my order {order}?", "I want a refund for my {thing}", "I was charged twice",
    "can't log in to my account, the reset link doesn't work", "how do I cancel my {product}",
    "how do I change my {thing} settings", "does the {product} support {thing}?", "hi",
    "my {thing} stopped working after the update", "do you ship to {country}?",
    "the {thing} arrived broken, what are my options", "is there a discount on {thing}",
    "can I change the address on order {order}", "basic vs premium {product}, what's different",
)
FOLLOWUPS = (
    "it's {order}", "still not working", "ok thanks", "can I talk to a human?", "yes",
    "I already tried that", "how long will it take?", "what about the {thing}?",
    "no, the other one", "the order number is {order}",
)
LANGS = ("German", "French", "Spanish", "Italian", "Japanese", "Korean", "Portuguese (Brazil)",
         "Dutch", "Polish", "Turkish", "Simplified Chinese", "Arabic", "Swedish", "Hindi")
CONTENT = {"product listing": (40, 150), "help-center article": (150, 600),
           "UI string": (3, 15), "marketing email": (80, 300)}
LABEL_TASKS = (
    ("Classify the sentiment of the review as positive, negative or neutral.", "Review"),
    ("Route the ticket to one team: billing, technical, account, shipping or other.", "Ticket"),
    ("Is this tweet about our brand? Answer yes or no.", "Tweet"),
    ("Label the headline's topic: business, sports, science, politics or culture.", "Headline"),
    ("Does the message contain a complaint? Answer yes or no.", "Message"),
    ("Rate the answer's helpfulness from 1 to 5.", "Answer"),
)
LABELS = ("positive", "negative", "neutral", "billing", "technical", "yes", "no", "3", "5")
RESEARCH_FRAMES = (
    "Solve: a {a} costs {x} and a {b} costs {y}. What do {k} of each cost? Show your work.",
    "Write a short story about a {a} and a {b}.", "Write a haiku about {a}.",
    "List five creative uses of {a} in {t}.", "Give one argument for and one against {a}.",
    "True or false: every {a} is a kind of {b}. Explain briefly.",
    "Continue the text: The {a} of {t} began when",
)
QUESTIONS = (
    "what is our policy on {a}?", "how do I set up {a} for {b}?", "who approves {a} requests?",
    "what does {a} mean in the {b} guide?", "summarize what the docs say about {a}",
    "{a} {b} error, how to fix", "when did the {a} rules change?",
)
TOOLS = {
    "web_search": 'Search the web. {"query": string}',
    "read_file": 'Read a file from the workspace. {"path": string}',
    "run_sql": 'Run a read-only SQL query on the warehouse. {"sql": string}',
    "http_get": 'Fetch a URL and return its text. {"url": string}',
    "python": 'Run Python code and return stdout. {"code": string}',
    "create_ticket": 'Open a ticket. {"title": string, "body": string, "priority": string}',
    "send_email": 'Send an email. {"to": string, "subject": string, "body": string}',
    "calendar": 'List or book meetings. {"action": "list" | "book", "date": string}',
}
TASKS = (
    "Find out why the {a} numbers for {b} dropped last week and open a ticket.",
    "Draft a reply to the customer asking about {a} and {b}.",
    "Collect the latest {a} figures and email a summary to the team.",
    "Check whether the {a} job failed overnight and why.",
    "Book a meeting about {a} with the {b} owners next week.",
)
POLICY = ("hate", "harassment", "sexual content", "violence", "self-harm", "spam", "scams")
SURFACES = ("forum", "marketplace listings", "game chat", "product reviews", "comment section")
DOC_KINDS = ("earnings call transcript", "contract", "support ticket thread", "research paper",
             "meeting transcript", "incident report")
# Code lines per language ({a}-{d} identifiers, {A}{B} type names): header, lines, stops.
PY = """def {a}_{b}({c}, {d}=None):
    {a} = {c}.get('{b}')
    if {a} is None:
        return {d}
    for {c} in {a}_{b}s:
        {d}.append({c}.{b})
    return {a}
class {A}{B}:
    def __init__(self, {a}):
        self.{a} = {a}
from {proj}.{a} import {A}{B}
    {a}_{b} = {d}({c}, timeout={n})  # {a} the {b}
"""
TS = """export function {a}{B}({c}: {A}, {d}?: number): {B} {{
  const {a} = {c}.{b} ?? {n};
  if (!{a}) {{
    return {d};
  }}
  for (const {c} of {a}{B}s) {{
  await this.{a}.{b}({c});  // {a} the {b}
}}
import {{ {A}{B} }} from './{a}';
interface {A}{B} {{ {a}: string; {b}: number }}
"""
CODE = {
    "python": ("# Path: {path}.py", [*PY.splitlines(), ""], ["\n\n", "\ndef ", "\nclass "]),
    "typescript": ("// Path: {path}.ts", [*TS.splitlines(), ""], ["\n\n", "\nfunction "]),
}
# fmt: on

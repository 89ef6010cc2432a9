"""Wires the guardrails (guardrails.py, unit-tested on its own) into a policy pack."""

from guardrails import POLICIES
from pulumi_policy import PolicyPack

PolicyPack(name="sophia-guardrails", policies=POLICIES)

"""Helpers shared by the test suite and the benches: real servers on loopback, a tiny exported model, the
worker scenario, reading topics back.

Why a package of its own: bench/ needs the same Redis/Tansu start-up and scenarios as tests/, and a bench that
imports from tests/ ties two jobs together; both now import from here. Not part of the service wheel.
"""

"""Slack as a front door: slash commands and buttons, verified, acknowledged at once,
worked on afterwards, and carried out through the same incident actions as every
other front door. ``bot.chat.setup.setup(app)`` wires the whole Slack feature.
"""

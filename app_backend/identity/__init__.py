"""Real-name residents: OTP login, tokens, sessions, real-name and face verification."""

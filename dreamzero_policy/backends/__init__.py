"""Policy backends behind one interface (ARCHITECTURE.md section 4): ``local`` (in-process WAM) and
``remote`` (DreamZero / RoboArena WebSocket protocol). See :mod:`dreamzero_policy.backends.base`."""

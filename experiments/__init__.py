"""Experiment scripts: ``experiments/<name>.py`` declares ``Config`` (its typed options) and
``main(cfg, out) -> metrics``; ``conf/experiment/<name>.yaml`` sets its defaults."""

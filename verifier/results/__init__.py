"""Result types, the bottom layer above ``verifier.ir``: what the check
engines (``check``) and the timeline analysis (``analysis``) produce, as data.
Nothing here imports anything of the project but ``verifier.ir``."""

"""Crafted files and models the hostile tests build at run time: nothing binary is committed."""

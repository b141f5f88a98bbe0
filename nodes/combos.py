"""A combo input whose value ComfyUI checks at /prompt time, as it does for its own nodes' combos.

ComfyUI 0.3.64 checks a combo value against its options only when the input's type is the option
list (the V1 form, e.g. KSampler's sampler_name); a V3 io.Combo has the type "COMBO" and is not checked
anywhere, so a wrong value would reach execute(). A ListedCombo declares the list as its type: a value
outside it is one "Value not in list" message on that input, and the frontend draws the same dropdown.
"""

from __future__ import annotations

from comfy_api.latest import io


class ListedCombo(io.Combo.Input):
    """io.Combo.Input with the option list as its type (ComfyUI validates the value at /prompt)."""

    def get_io_type(self):
        return list(self.options)

"""The LightCLIP losses, one module each: L = w_ins L_ins + w_tok L_tok + w_mlm L_mlm."""

__all__: list[str] = []

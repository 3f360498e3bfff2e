"""After a study: what reads a study directory (or its recommendation.json) and makes something of it.

    report/       `mixopt report`: one self-contained HTML page with the study's plots
    export.py     `mixopt export`: the mixture for Megatron-LM, Hugging Face datasets or YAML
    validate.py   `mixopt validate`: the mixtures ranked at the proxy's scale and a larger one
    jacobian.py   `mixopt jacobian`: the study's transfer structure for the auto mixer
"""

"""hadware.synth"""

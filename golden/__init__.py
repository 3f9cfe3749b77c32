"""hadware.golden"""

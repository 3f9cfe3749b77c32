"""hadware.sw"""

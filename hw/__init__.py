"""hadware.hw"""

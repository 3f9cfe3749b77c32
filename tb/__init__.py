"""hadware.tb"""
